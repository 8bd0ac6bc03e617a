# CenterPoint-pillar reduced for CPU training on the synthetic nuScenes-format
# dataset (integration/data/nuscenes.py).
#
# Derived from MMDetection3D's pillar02 config by inheritance.  Values that the
# base config computes from its own `point_cloud_range` / `voxel_size`
# variables are restated here: mmengine merges dicts, it does not re-evaluate
# the base file with our variables.
#
# Sizes: +-32 m range, 0.32 m pillars -> a 200 x 200 BEV grid, PFN 32,
# SECOND 32/64/128 with 2/3/3 layers, SECONDFPN 3 x 64, shared head conv 32
# (about 1.5 M parameters instead of pillar02's 5.9 M).
#
# `data_root` is a default only; the driver and the training script rewrite
# every dataset / metric path from their --data-root argument
# (integration/backends/mmdet3d/config.py: set_data_root).
_base_ = ['mmdet3d::centerpoint/'
          'centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d.py']

data_root = 'work_dirs/synthetic_nuscenes/'
point_cloud_range = [-32.0, -32.0, -5.0, 32.0, 32.0, 3.0]
post_center_range = [-40.0, -40.0, -10.0, 40.0, 40.0, 10.0]
voxel_size = [0.32, 0.32, 8]
grid_size = [200, 200, 1]
out_size_factor = 4
pfn_channels = 32
backbone_channels = [32, 64, 128]
backbone_layers = [2, 3, 3]
neck_channels = [64, 64, 64]
share_conv_channel = 32
sweeps_num = 1
backend_args = None
# NuScenesDataset's class default is v1.0-trainval; NuScenesMetric opens the
# devkit tables of the dataset's version.
metainfo = dict(classes={{_base_.class_names}}, version='v1.0-mini')

model = dict(
    data_preprocessor=dict(
        voxel_layer=dict(
            point_cloud_range=point_cloud_range,
            voxel_size=voxel_size,
            max_voxels=(16000, 20000))),
    pts_voxel_encoder=dict(
        feat_channels=[pfn_channels],
        voxel_size=voxel_size,
        point_cloud_range=point_cloud_range),
    pts_middle_encoder=dict(
        in_channels=pfn_channels, output_shape=tuple(grid_size[:2])),
    pts_backbone=dict(
        in_channels=pfn_channels,
        out_channels=backbone_channels,
        layer_nums=backbone_layers),
    pts_neck=dict(in_channels=backbone_channels, out_channels=neck_channels),
    pts_bbox_head=dict(
        in_channels=sum(neck_channels),
        share_conv_channel=share_conv_channel,
        bbox_coder=dict(
            pc_range=point_cloud_range[:2],
            post_center_range=post_center_range,
            out_size_factor=out_size_factor,
            voxel_size=voxel_size[:2])),
    train_cfg=dict(
        pts=dict(
            point_cloud_range=point_cloud_range,
            grid_size=grid_size,
            voxel_size=voxel_size,
            out_size_factor=out_size_factor)),
    test_cfg=dict(
        pts=dict(
            post_center_limit_range=post_center_range,
            pc_range=point_cloud_range[:2],
            out_size_factor=out_size_factor,
            voxel_size=voxel_size[:2])))

# No ground-truth database sampling (ObjectSample): the synthetic dataset has
# no dbinfos file and every class appears in every scene anyway.
train_pipeline = [
    dict(
        type='LoadPointsFromFile',
        coord_type='LIDAR',
        load_dim=5,
        use_dim=5,
        backend_args=backend_args),
    dict(
        type='LoadPointsFromMultiSweeps',
        sweeps_num=sweeps_num,
        use_dim=[0, 1, 2, 3, 4],
        pad_empty_sweeps=True,
        remove_close=True,
        backend_args=backend_args),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    dict(
        type='GlobalRotScaleTrans',
        rot_range=[-0.3925, 0.3925],
        scale_ratio_range=[0.95, 1.05],
        translation_std=[0, 0, 0]),
    dict(
        type='RandomFlip3D',
        sync_2d=False,
        flip_ratio_bev_horizontal=0.5,
        flip_ratio_bev_vertical=0.5),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectNameFilter', classes={{_base_.class_names}}),
    dict(type='PointShuffle'),
    dict(
        type='Pack3DDetInputs',
        keys=['points', 'gt_bboxes_3d', 'gt_labels_3d'])
]
test_pipeline = [
    dict(
        type='LoadPointsFromFile',
        coord_type='LIDAR',
        load_dim=5,
        use_dim=5,
        backend_args=backend_args),
    dict(
        type='LoadPointsFromMultiSweeps',
        sweeps_num=sweeps_num,
        use_dim=[0, 1, 2, 3, 4],
        pad_empty_sweeps=True,
        remove_close=True,
        test_mode=True,
        backend_args=backend_args),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='Pack3DDetInputs', keys=['points'])
]

# Single-process loading: the target machines have two cores.
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        dataset=dict(
            data_root=data_root, pipeline=train_pipeline, metainfo=metainfo)))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root, pipeline=test_pipeline, metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(
    data_root=data_root, ann_file=data_root + 'nuscenes_infos_val.pkl')
test_evaluator = val_evaluator

# Iteration-based schedule (train_synthetic.py --max-iters overrides).
lr = 2e-3
max_iters = 600
optim_wrapper = dict(optimizer=dict(lr=lr))
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
