# A very small CenterPoint-voxel (spconv) for reconstruction tests and benchmarks on synthetic points:
# MMDetection3D's voxel01 nuScenes config with every size cut down.  Random weights; it only has to run
# through the same module types as voxel01 (HardSimpleVFE, SparseEncoder with SubMConv3d / SparseConv3d and
# SparseBasicBlock, SECOND, SECONDFPN with a ConvTranspose2d, CenterHead), not to detect anything.
#
# Sizes: +-16 m range, 0.25 x 0.25 x 0.2 m voxels -> a 41 x 128 x 128 sparse grid (z, y, x), sparse stages
# 8 / 16 / 32 / 32 channels (three stride-2 SparseConv3d, then conv_out to 2 z-slices of 32 channels),
# a 16 x 16 BEV map (stride 8), SECOND 32/64 with one layer per stage, SECONDFPN 2 x 32, shared head conv 16.
# Only the model is meant to be used: the data settings are the base's (real nuScenes paths).
_base_ = ['mmdet3d::centerpoint/centerpoint_voxel01_second_secfpn_8xb4-cyclic-20e_nus-3d.py']

point_cloud_range = [-16.0, -16.0, -5.0, 16.0, 16.0, 3.0]
post_center_range = [-20.0, -20.0, -10.0, 20.0, 20.0, 10.0]
voxel_size = [0.25, 0.25, 0.2]
grid_size = [128, 128, 40]
sparse_out_channels = 32
backbone_channels = [32, 64]
neck_channels = [32, 32]

model = dict(
    data_preprocessor=dict(
        voxel_layer=dict(point_cloud_range=point_cloud_range, voxel_size=voxel_size,
                         max_num_points=10, max_voxels=(20000, 20000))),
    pts_middle_encoder=dict(
        sparse_shape=[grid_size[2] + 1, grid_size[1], grid_size[0]],
        base_channels=8,
        output_channels=sparse_out_channels,
        encoder_channels=((8, 8, 16), (16, 16, 32), (32, 32, 32), (32, 32)),
        encoder_paddings=((0, 0, 1), (0, 0, 1), (0, 0, [0, 1, 1]), (0, 0))),
    pts_backbone=dict(
        in_channels=2 * sparse_out_channels, out_channels=backbone_channels, layer_nums=[1, 1]),
    pts_neck=dict(in_channels=backbone_channels, out_channels=neck_channels),
    pts_bbox_head=dict(
        in_channels=sum(neck_channels),
        share_conv_channel=16,
        separate_head=dict(head_conv=16),
        bbox_coder=dict(pc_range=point_cloud_range[:2], post_center_range=post_center_range,
                        voxel_size=voxel_size[:2])),
    train_cfg=dict(pts=dict(point_cloud_range=point_cloud_range, grid_size=grid_size, voxel_size=voxel_size)),
    test_cfg=dict(pts=dict(post_center_limit_range=post_center_range, pc_range=point_cloud_range[:2],
                           voxel_size=voxel_size[:2])))
