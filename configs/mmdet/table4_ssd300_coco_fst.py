# Table 4, VGG16-SSD300, COCO 2017 train, val2017 bbox AP: fst (paper: 25.5).
# mmdet's own config (ssd/ssd300_coco.py): its model, schedule and data, unchanged.
# Data under data/coco/ (mmdet's layout; or pass --cfg-options); the backbone starts from
# ImageNet weights as in mmdet (mmengine downloads them on first use).
# FST: every conv and linear layer 2:4 sparse in forward and backward (fst.sparsify).
_base_ = "mmdet::ssd/ssd300_coco.py"

custom_imports = dict(imports=["fst.integrations.mmdet"], allow_failed_imports=False)
custom_hooks = [
    dict(type="NumClassCheckHook"),
    dict(type="CheckInvalidLossHook", interval=50, priority="VERY_LOW"),
    dict(type="FSTSparsifyHook", strategy="fst", backend="native", exclude=[], decay=2e-4),
]
