# Table 4, R50-FPN Faster R-CNN, COCO 2017 train, val2017 bbox AP: fst (paper: 37.2).
# mmdet's own config (faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py): its model, schedule and data, unchanged.
# Data under data/coco/ (mmdet's layout; or pass --cfg-options); the backbone starts from
# ImageNet weights as in mmdet (mmengine downloads them on first use).
# FST: every conv and linear layer 2:4 sparse in forward and backward (fst.sparsify).
_base_ = "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"

custom_imports = dict(imports=["fst.integrations.mmdet"], allow_failed_imports=False)
custom_hooks = [
    dict(type="FSTSparsifyHook", strategy="fst", backend="native", exclude=[], decay=2e-4),
]
