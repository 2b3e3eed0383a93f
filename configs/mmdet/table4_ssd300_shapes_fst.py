# Embedded-data stand-in for the Table 4 SSD rows (fst): the dense shapes config with every conv
# 2:4 sparse in forward and backward (see the dense file for the data and settings).
_base_ = "./table4_ssd300_shapes_dense.py"

custom_hooks = [
    dict(type="NumClassCheckHook"),
    dict(type="CheckInvalidLossHook", interval=50, priority="VERY_LOW"),
    dict(type="FSTSparsifyHook", strategy="fst", backend="native", exclude=[], decay=2e-4),
]
