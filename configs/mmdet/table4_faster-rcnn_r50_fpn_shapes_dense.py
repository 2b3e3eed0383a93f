# Embedded-data stand-in for the Table 4 Faster R-CNN rows (dense): fst's synthetic shapes set
# (FSTShapesDataset: 128 px COCO files written on first use, no download), NOT VOC/COCO; scored
# by mmdet's CocoMetric. Inherits mmdet's faster-rcnn_r50_fpn_1x_coco.py; reduced for a CPU like
# configs/experiment/table4_fasterrcnn_r50_fpn_shapes_*.yaml: 128 px inputs, ResNet-50 at a
# quarter width (base_channels=16), 64-wide FPN/RPN, 256-wide box head, fewer proposals; from
# scratch with trained BatchNorm; AdamW lr 1e-3, cosine, 2 epochs of 1000 images, batch 8.
_base_ = "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"

custom_imports = dict(imports=["fst.integrations.mmdet"], allow_failed_imports=False)

image_size = 128
shapes = dict(num_train=1000, num_val=200, image_size=image_size)
width = 64  # FPN / RPN / RoI feature width
model = dict(
    backbone=dict(
        base_channels=16, frozen_stages=-1, norm_eval=False, init_cfg=None
    ),  # from scratch: nothing to download
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=4),
    ),
    train_cfg=dict(rpn_proposal=dict(nms_pre=600, max_per_img=300)),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)),
)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(type="Resize", scale=(image_size, image_size), keep_ratio=True),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(image_size, image_size), keep_ratio=True),
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
        pipeline=train_pipeline,
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
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type="AdamW", lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=1, max_keep_ckpts=1))
randomness = dict(seed=0)
