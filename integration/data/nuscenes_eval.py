"""nuscenes-devkit evaluation on a subset of a split (both backends' ``--max-eval-frames``)."""
import contextlib

__all__ = ["ground_truth_limited_to"]


@contextlib.contextmanager
def ground_truth_limited_to(sample_tokens):
    """Make nuscenes-devkit's evaluation read ground truth only for ``sample_tokens``.

    NuScenesEval insists that predictions cover every sample of the split; when only the first N
    val frames are evaluated, the ground truth must shrink to the same frames.
    """
    if sample_tokens is None:
        yield
        return
    from nuscenes.eval.common.loaders import load_gt_of_sample_tokens
    from nuscenes.eval.detection import evaluate
    original = evaluate.load_gt
    evaluate.load_gt = lambda nusc, eval_split, box_cls, verbose=False: load_gt_of_sample_tokens(
        nusc, list(sample_tokens), box_cls, verbose=verbose)
    try:
        yield
    finally:
        evaluate.load_gt = original
