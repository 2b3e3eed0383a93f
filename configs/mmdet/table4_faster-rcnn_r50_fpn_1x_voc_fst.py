# Table 4, R50-FPN Faster R-CNN, PASCAL VOC 07+12 trainval, VOC07 test mAP@0.5: fst (paper: 79.4).
# mmdet's own config (pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py): its model, schedule and data, unchanged.
# Data under data/VOCdevkit/ (mmdet's layout; or pass --cfg-options); the backbone starts from
# ImageNet weights as in mmdet (mmengine downloads them on first use).
# FST: every conv and linear layer 2:4 sparse in forward and backward (fst.sparsify).
_base_ = "mmdet::pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py"

custom_imports = dict(imports=["fst.integrations.mmdet"], allow_failed_imports=False)
custom_hooks = [
    dict(type="FSTSparsifyHook", strategy="fst", backend="native", exclude=[], decay=2e-4),
]
