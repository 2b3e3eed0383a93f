# Embedded-data stand-in for the Table 4 SSD rows (dense): fst's synthetic shapes set
# (FSTShapesDataset: 128 px COCO files written on first use, no download), NOT VOC/COCO; scored
# by mmdet's CocoMetric. Inherits mmdet's ssd300_coco.py with its SSD augmentation; SSD300-VGG16
# unreduced (its input is fixed at 300 x 300), trained from scratch (nothing to download) with
# the COCO recipe's SGD on 400 images for 2 epochs, batch 8, like
# configs/experiment/table4_ssd300_vgg16_shapes_*.yaml: a pipeline check, far too short to learn.
_base_ = "mmdet::ssd/ssd300_coco.py"

custom_imports = dict(imports=["fst.integrations.mmdet"], allow_failed_imports=False)

shapes = dict(num_train=400, num_val=200, image_size=128)
model = dict(backbone=dict(init_cfg=None), bbox_head=dict(num_classes=4))
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(300, 300), keep_ratio=False),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(
        type="PackDetInputs",
        # "instances": CocoMetric without ann_file scores against the dataset's own boxes
        meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor", "instances"),
    ),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type="FSTShapesDataset",
        split="train",
        **shapes,
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline={{_base_.train_pipeline}},
    ),
)
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type="FSTShapesDataset",
        split="val",
        **shapes,
        test_mode=True,
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="CocoMetric", ann_file=None, metric="bbox", format_only=False)
test_evaluator = val_evaluator

max_epochs = 2
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=25),
    dict(type="MultiStepLR", by_epoch=True, begin=0, end=max_epochs, milestones=[max_epochs]),
]
custom_hooks = [
    dict(type="NumClassCheckHook"),
    dict(type="CheckInvalidLossHook", interval=50, priority="VERY_LOW"),
    dict(type="SSDPredictFixHook"),  # mmdet#11305
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=1, max_keep_ckpts=1))
randomness = dict(seed=0)
