"""DeepLab v2, the downstream semantic segmentation model: training (``train``) and inference (``infer``)."""
