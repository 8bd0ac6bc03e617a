# A much smaller CenterPoint-pillar for the Waymo end-to-end tests (tests/integration/test_waymo_pipeline.py):
# the synthetic Waymo config with 1.248 m pillars (a 120 x 120 grid: the stride-2/4/8 maps must upsample back to the
# same 60 x 60 size), PFN 8, backbone 8/16/32 with
# one layer each, neck 3 x 16, shared head conv 8. It only has to run, not to detect well.
_base_ = ['./centerpoint_pillar_waymo_synthetic.py']

voxel_size = [1.248, 1.248, 6.0]
grid_size = [120, 120, 1]
pfn_channels = 8
backbone_channels = [8, 16, 32]
neck_channels = [16, 16, 16]

model = dict(
    data_preprocessor=dict(
        voxel_layer=dict(voxel_size=voxel_size, max_voxels=(4000, 4000))),
    pts_voxel_encoder=dict(feat_channels=[pfn_channels], voxel_size=voxel_size),
    pts_middle_encoder=dict(
        in_channels=pfn_channels, output_shape=tuple(grid_size[:2])),
    pts_backbone=dict(
        in_channels=pfn_channels,
        out_channels=backbone_channels,
        layer_nums=[1, 1, 1]),
    pts_neck=dict(in_channels=backbone_channels, out_channels=neck_channels),
    pts_bbox_head=dict(
        in_channels=sum(neck_channels),
        share_conv_channel=8,
        separate_head=dict(head_conv=8),
        bbox_coder=dict(voxel_size=voxel_size[:2])),
    train_cfg=dict(pts=dict(grid_size=grid_size, voxel_size=voxel_size)),
    test_cfg=dict(pts=dict(voxel_size=voxel_size[:2])))
