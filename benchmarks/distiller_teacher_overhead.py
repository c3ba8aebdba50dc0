"""Teacher-side cost of a ConfigurableDistiller step under ``no_grad``: record_only_needed and
release_after_losses, side by side.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distiller_teacher_overhead.py``

ResNet-50-like teacher (as in ``recorder_overhead.py``) with 50 teacher recorders; the losses read
either all 50 or 2 of them. ``release_after_losses=True`` (the default) keeps no_grad records for the
next recording to replace one by one; ``"all"`` drops them right after the losses. Each timed step is ``with distiller.recording("teacher"): teacher(x)``,
interleaved with plain forwards; ``compute_distill_losses()`` (which releases the records when
``release_after_losses``) runs after each recorded step, outside the clock.
"""

from __future__ import annotations

import argparse

import torch
from recorder_overhead import ResNet50Like, measure
from torch import nn

from torchpare.distill.distiller import ConfigurableDistiller


class _Mean(nn.Module):
    def forward(self, t_feature: torch.Tensor) -> torch.Tensor:
        return t_feature.mean()


class _TeacherStep:
    """``with step:`` is the teacher's recording; ``release()`` computes the losses (outside the clock)."""

    def __init__(self, distiller: ConfigurableDistiller) -> None:
        self.distiller = distiller
        self._ctx = None

    def __enter__(self) -> _TeacherStep:
        self._ctx = self.distiller.recording("teacher")
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)

    def release(self) -> None:
        self.distiller.compute_distill_losses()


def build(model: nn.Module, chosen: list[str], read: int, **flags: object) -> _TeacherStep:
    read_names = chosen[:: max(1, len(chosen) // read)][:read]
    d = ConfigurableDistiller(
        teacher_recorders={n: {"type": "ModuleOutputs", "source": n} for n in chosen},
        distill_losses={f"l{i}": _Mean() for i in range(len(read_names))},
        loss_forward_mappings={
            f"l{i}": {"t_feature": {"from_student": False, "recorder": n}} for i, n in enumerate(read_names)
        },
        **flags,
    )
    d.prepare_from_teacher(model)
    return _TeacherStep(d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--recorders", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ResNet50Like(args.width).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    chosen = names[:: max(1, len(names) // args.recorders)][: args.recorders]
    print(
        f"teacher: ResNet-50-like width {args.width}, input {tuple(x.shape)}, threads {args.threads}, "
        f"{len(chosen)} teacher recorders, {args.repeats} interleaved repeats, eval under no_grad"
    )
    for read in (len(chosen), 2):
        for only, release in ((False, False), (True, False), (False, "all"), (True, "all"), (True, True)):
            if read == len(chosen) and only:
                continue  # every recorder is read: record_only_needed changes nothing
            step = build(model, chosen, read, record_only_needed=only, release_after_losses=release)
            with torch.no_grad():
                base, rec, pair, f_base, f_rec = measure(model, x, step, args.repeats, release=True)
            print(
                f"losses read {read:2d}/{len(chosen)}, record_only_needed={only!s:5}, "
                f"release_after_losses={release!r:5}: ratio of medians {rec / base:.3f}, median paired "
                f"ratio {pair:.3f}; page faults per forward: plain {f_base:.0f}, recorded {f_rec:.0f}"
            )
            step.distiller.teacher_recorders.release()


if __name__ == "__main__":
    main()
