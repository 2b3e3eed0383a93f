# Table 4, R50-FPN Faster R-CNN, COCO 2017 train, val2017 bbox AP: dense (paper: 37.4).
# mmdet's own config (faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py): its model, schedule and data, unchanged.
# Data under data/coco/ (mmdet's layout; or pass --cfg-options); the backbone starts from
# ImageNet weights as in mmdet (mmengine downloads them on first use).
_base_ = "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"
