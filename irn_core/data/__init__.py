"""Dataset readers (PASCAL VOC 2012 + SBD, COCO, the synthetic generator), sharding, transforms."""
