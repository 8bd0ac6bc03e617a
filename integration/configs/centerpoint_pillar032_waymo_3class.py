# CenterPoint-pillar for the Waymo Open Dataset in MMDetection3D 1.4, mirroring OpenPCDet's
# tools/cfgs/waymo_models/centerpoint_pillar_1x.yaml (MMDetection3D ships no CenterPoint Waymo config):
# 0.32 m pillars over +-74.88 m (a 468 x 468 grid), z -2..4 m, PillarVFE 64 with absolute xyz,
# backbone 3/5/5 blocks of 64/128/256 channels at strides 1/2/2 upsampled to 128 each at stride 1,
# one head for Vehicle/Pedestrian/Cyclist (shared conv 64, two convs per regression branch),
# Gaussian overlap 0.1, min radius 2, 500 objects, score threshold 0.1, NMS IoU 0.7 over 4096 -> 500
# boxes, post-centre limit +-80 m, Adam one-cycle lr 0.003 for 30 epochs (batch 6 per GPU).
#
# Data: kitti_format/ as `python integration/prepare_data.py waymo --framework mmdet3d --root DIR`
# writes it (MMDetection3D's own converter), ground truth waymo_format/gt.bin, evaluated by
# WaymoOpMetric (integration/backends/mmdet3d/waymo_metric.py: MMDetection3D's WaymoMetric with the
# official metrics op instead of the binary it cannot find). MMDetection3D's CenterHead trains on the
# nuScenes box layout (with a velocity): ZeroVelocity pads the Waymo boxes and the velocity branch
# gets loss weight 0. MMDetection3D names Vehicle 'Car'.
_base_ = [
    'mmdet3d::_base_/datasets/waymoD5-3d-3class.py',
    'mmdet3d::_base_/models/centerpoint_pillar02_second_secfpn_nus.py',
    'mmdet3d::_base_/default_runtime.py',
]
custom_imports = dict(
    imports=['integration.backends.mmdet3d.waymo_metric',
             'integration.backends.mmdet3d.waymo_transforms'],
    allow_failed_imports=False)

data_root = 'data/waymo/'
class_names = ['Car', 'Pedestrian', 'Cyclist']
metainfo = dict(classes=class_names)
# one data_root for infos, points and gt.bin (the driver's --data-root rebases it)
data_prefix = dict(pts='kitti_format/training/velodyne',
                   sweeps='kitti_format/training/velodyne')
point_cloud_range = [-74.88, -74.88, -2.0, 74.88, 74.88, 4.0]
post_center_range = [-80.0, -80.0, -10.0, 80.0, 80.0, 10.0]
voxel_size = [0.32, 0.32, 6.0]
grid_size = [468, 468, 1]
out_size_factor = 1
pfn_channels = 64
backbone_channels = [64, 128, 256]
backbone_layers = [3, 5, 5]
backbone_strides = [1, 2, 2]
neck_channels = [128, 128, 128]
neck_strides = [1, 2, 4]
share_conv_channel = 64
max_voxels = (150000, 150000)
backend_args = None

model = dict(
    data_preprocessor=dict(
        voxel_layer=dict(
            point_cloud_range=point_cloud_range,
            voxel_size=voxel_size,
            max_voxels=max_voxels)),
    pts_voxel_encoder=dict(
        feat_channels=[pfn_channels],
        voxel_size=voxel_size,
        point_cloud_range=point_cloud_range),
    pts_middle_encoder=dict(
        in_channels=pfn_channels, output_shape=tuple(grid_size[:2])),
    pts_backbone=dict(
        in_channels=pfn_channels,
        out_channels=backbone_channels,
        layer_nums=backbone_layers,
        layer_strides=backbone_strides),
    pts_neck=dict(
        in_channels=backbone_channels,
        out_channels=neck_channels,
        upsample_strides=neck_strides),
    pts_bbox_head=dict(
        in_channels=sum(neck_channels),
        tasks=[dict(num_class=3, class_names=class_names)],
        share_conv_channel=share_conv_channel,
        bbox_coder=dict(
            pc_range=point_cloud_range[:2],
            post_center_range=post_center_range,
            score_threshold=0.1,
            out_size_factor=out_size_factor,
            voxel_size=voxel_size[:2])),
    train_cfg=dict(
        pts=dict(
            point_cloud_range=point_cloud_range,
            grid_size=grid_size,
            voxel_size=voxel_size,
            out_size_factor=out_size_factor,
            code_weights=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
                          0.0])),
    test_cfg=dict(
        pts=dict(
            post_center_limit_range=post_center_range,
            pc_range=point_cloud_range[:2],
            out_size_factor=out_size_factor,
            voxel_size=voxel_size[:2],
            min_radius=[4],
            nms_type='rotate',
            pre_max_size=4096,
            post_max_size=500,
            nms_thr=0.7)))

# Waymo2KITTI saves x, y, z, intensity, elongation, timestamp per point; the model reads the first five
load_points = dict(
    type='LoadPointsFromFile',
    coord_type='LIDAR',
    load_dim=6,
    use_dim=5,
    backend_args=backend_args)
train_pipeline = [
    load_points,
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    dict(
        type='RandomFlip3D',
        sync_2d=False,
        flip_ratio_bev_horizontal=0.5,
        flip_ratio_bev_vertical=0.5),
    dict(
        type='GlobalRotScaleTrans',
        rot_range=[-0.78539816, 0.78539816],
        scale_ratio_range=[0.95, 1.05]),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ZeroVelocity'),
    dict(type='PointShuffle'),
    dict(
        type='Pack3DDetInputs',
        keys=['points', 'gt_bboxes_3d', 'gt_labels_3d'])
]
test_pipeline = [
    load_points,
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(
        type='Pack3DDetInputs',
        keys=['points'],
        meta_keys=['box_type_3d', 'sample_idx', 'context_name', 'timestamp'])
]

train_dataloader = dict(
    batch_size=6,
    num_workers=4,
    dataset=dict(
        _delete_=True,
        type='WaymoDataset',
        data_root=data_root,
        ann_file='kitti_format/waymo_infos_train.pkl',
        data_prefix=data_prefix,
        pipeline=train_pipeline,
        modality=dict(use_lidar=True, use_camera=False),
        test_mode=False,
        metainfo=metainfo,
        box_type_3d='LiDAR',
        load_interval=1,
        backend_args=backend_args))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        ann_file='kitti_format/waymo_infos_val.pkl',
        data_prefix=data_prefix,
        pipeline=test_pipeline,
        metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='WaymoOpMetric', waymo_bin_file=data_root + 'waymo_format/gt.bin')
test_evaluator = val_evaluator

lr = 0.003
epochs = 30
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=lr, weight_decay=0.01),
    clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='OneCycleLR', eta_max=lr, total_steps=None, pct_start=0.4,
         div_factor=10, begin=0, end=epochs, by_epoch=True, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=epochs, val_interval=epochs)
val_cfg = dict()
test_cfg = dict()
