# CenterPoint-pillar reduced for CPU training on the synthetic Waymo-format dataset
# (integration/data/waymo: 8 segments of 10 frames, TOP LiDAR 64 x 1024 range image).
#
# Inherits the real-data mirror of OpenPCDet's centerpoint_pillar_1x (same range +-74.88 m, classes,
# data layout, ZeroVelocity and WaymoOpMetric) and shrinks the model for two CPU cores: 0.48 m pillars
# (a 312 x 312 grid), heat map at stride 2 (0.96 m cells), PFN 32, backbone 32/64/128 with 2/3/3 layers
# at strides 2/2/2, neck 3 x 64 upsampled to stride 2, shared head conv 32 (about 1.5 M parameters).
# Iteration-based schedule for integration/train_synthetic.py --dataset waymo.
_base_ = ['./centerpoint_pillar032_waymo_3class.py']

data_root = 'work_dirs/synthetic_waymo/'
point_cloud_range = [-74.88, -74.88, -2.0, 74.88, 74.88, 4.0]
voxel_size = [0.48, 0.48, 6.0]
grid_size = [312, 312, 1]
out_size_factor = 2
pfn_channels = 32
backbone_channels = [32, 64, 128]
neck_channels = [64, 64, 64]

model = dict(
    data_preprocessor=dict(
        voxel_layer=dict(voxel_size=voxel_size, max_voxels=(40000, 40000))),
    pts_voxel_encoder=dict(feat_channels=[pfn_channels], voxel_size=voxel_size),
    pts_middle_encoder=dict(
        in_channels=pfn_channels, output_shape=tuple(grid_size[:2])),
    pts_backbone=dict(
        in_channels=pfn_channels,
        out_channels=backbone_channels,
        layer_nums=[2, 3, 3],
        layer_strides=[2, 2, 2]),
    pts_neck=dict(
        in_channels=backbone_channels,
        out_channels=neck_channels,
        upsample_strides=[1, 2, 4]),
    pts_bbox_head=dict(
        in_channels=sum(neck_channels),
        share_conv_channel=32,
        bbox_coder=dict(out_size_factor=out_size_factor,
                        voxel_size=voxel_size[:2])),
    train_cfg=dict(
        pts=dict(
            grid_size=grid_size,
            voxel_size=voxel_size,
            out_size_factor=out_size_factor)),
    test_cfg=dict(
        pts=dict(out_size_factor=out_size_factor, voxel_size=voxel_size[:2])))

train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root))
val_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(waymo_bin_file=data_root + 'waymo_format/gt.bin')
test_evaluator = val_evaluator

lr = 2e-3
max_iters = 600
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=lr, weight_decay=0.01),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
         end=60),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=60, end=max_iters,
         T_max=max_iters - 60, eta_min=lr * 1e-2),
]
train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
    val_interval=max_iters + 1)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=-1),
    visualization=dict(draw=False))
log_processor = dict(by_epoch=False, window_size=20)
