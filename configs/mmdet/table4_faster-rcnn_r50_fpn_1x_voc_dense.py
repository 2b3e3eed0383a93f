# Table 4, R50-FPN Faster R-CNN, PASCAL VOC 07+12 trainval, VOC07 test mAP@0.5: dense (paper: 79.5).
# mmdet's own config (pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py): its model, schedule and data, unchanged.
# Data under data/VOCdevkit/ (mmdet's layout; or pass --cfg-options); the backbone starts from
# ImageNet weights as in mmdet (mmengine downloads them on first use).
_base_ = "mmdet::pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py"
