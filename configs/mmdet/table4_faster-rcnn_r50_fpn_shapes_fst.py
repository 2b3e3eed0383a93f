# Embedded-data stand-in for the Table 4 Faster R-CNN rows (fst): the dense shapes config with
# every conv and linear layer 2:4 sparse in forward and backward (see the dense file for the data
# and the CPU-sized reductions).
_base_ = "./table4_faster-rcnn_r50_fpn_shapes_dense.py"

custom_hooks = [
    dict(type="FSTSparsifyHook", strategy="fst", backend="native", exclude=[], decay=2e-4),
]
