"""The visual report: panels of one image (pure functions, arrays in, RGB arrays out), charts
(matplotlib, Agg), the sources that read a run's products, and the HTML page builder.

- :mod:`irn_core.report.colours`: the VOC palette as an array, the optical-flow colour wheel.
- :mod:`irn_core.report.panels`: one function per product (image, CAM, boundary, displacement,
  instance map, semantic labels, instances).
- :mod:`irn_core.report.sources`: the registry product folder -> panels, and the reading of one
  image's products from a run folder.
- :mod:`irn_core.report.figures`: bar charts, precision-recall curves, job costs, panel grids.
- :mod:`irn_core.report.page`: gathers a run's metrics, galleries and benchmarks into
  ``results/<name>/report/index.html`` with its PNGs beside it.
"""
