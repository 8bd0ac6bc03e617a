# A much smaller CenterPoint-pillar for end-to-end tests: same range, classes,
# heads and pipelines as the tiny config, 0.5 m pillars (128 x 128 BEV: the
# grid must divide by the backbone's total stride 8), PFN 16, SECOND 16/32/64 with one layer per stage, SECONDFPN 3 x 32, shared
# head conv 16.  It only has to run, not to detect well.
_base_ = ['./centerpoint_pillar_tiny_synthetic.py']

voxel_size = [0.5, 0.5, 8]
grid_size = [128, 128, 1]
pfn_channels = 16
backbone_channels = [16, 32, 64]
neck_channels = [32, 32, 32]

model = dict(
    data_preprocessor=dict(
        voxel_layer=dict(voxel_size=voxel_size, max_voxels=(6000, 8000))),
    pts_voxel_encoder=dict(
        feat_channels=[pfn_channels], voxel_size=voxel_size),
    pts_middle_encoder=dict(
        in_channels=pfn_channels, output_shape=tuple(grid_size[:2])),
    pts_backbone=dict(
        in_channels=pfn_channels,
        out_channels=backbone_channels,
        layer_nums=[1, 1, 1]),
    pts_neck=dict(in_channels=backbone_channels, out_channels=neck_channels),
    pts_bbox_head=dict(
        in_channels=sum(neck_channels),
        share_conv_channel=16,
        separate_head=dict(head_conv=16),
        bbox_coder=dict(voxel_size=voxel_size[:2])),
    train_cfg=dict(pts=dict(grid_size=grid_size, voxel_size=voxel_size)),
    test_cfg=dict(pts=dict(voxel_size=voxel_size[:2])))
