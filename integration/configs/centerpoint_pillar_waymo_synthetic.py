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

# The synthetic streets are straight and the ego drives along them, so in the vehicle frame every object
# faces 0, pi or +-pi/2 up to a little noise. A small rotation range (+-0.1 rad instead of the real
# config's +-45 degrees) lets this CPU-sized model learn headings precise enough for IoU 0.7 in the
# iterations a CPU affords; the real-data config keeps the full range.
train_pipeline = [
    {{_base_.load_points}},
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    dict(type='RandomFlip3D', sync_2d=False, flip_ratio_bev_horizontal=0.5,
         flip_ratio_bev_vertical=0.5),
    dict(type='GlobalRotScaleTrans', rot_range=[-0.1, 0.1],
         scale_ratio_range=[0.95, 1.05]),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ZeroVelocity'),
    dict(type='PointShuffle'),
    dict(type='Pack3DDetInputs', keys=['points', 'gt_bboxes_3d', 'gt_labels_3d'])
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
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
