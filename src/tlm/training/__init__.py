"""Training: a task-driven WordPiece tokenizer and the two TLM stages.

Stage 1 (joint): every step draws ONE batch. Of every rho1 + 1 steps, one is a task batch and
rho1 are external batches (the reference code's schedule). An external batch's loss is its MLM
loss; a task batch's is (rho2 * L_mlm + L_task) / (rho2 + 1), computed on the masked task text.
Stage 2 (rho1 = rho2 = 0): the task loss alone, with a fresh classification head; the checkpoint
with the best dev macro-F1 is kept (checkpoints are picked on dev, never on test), and with
`patience` the stage stops once that many evaluations in a row did not beat it.

A stage's budget is `max_steps`, or `epochs` over the task's training set (in stage 1 counted by
its task batches, each with its rho1 external ones), or `flops`, training FLOPs on real tokens
(converted to steps from the data's lengths before training, so the schedule is the same on any
machine). `plan_stage` resolves it, with the warm-up and evaluation interval, to steps.

One step's batch is the same whatever the hardware: it is drawn and masked identically on every
process, then split over `world` DDP processes and `gradient_accumulation_steps` micro-batches.
Each part's loss is a sum divided by the whole batch's count (masked tokens, examples), so the
gradient equals the single-process one and the schedule does not depend on the GPU count.

The modules, top down: `stage` (one stage of one run: data, model, plan, loop, checkpoint; DDP
start-up in `ddp`), `plan` (the stage's settings and its budget resolved to steps), `loop`
(`train_stage`, the training loop), `stream` (the batches in step order), `checkpoints`
(resumable state), `tokenizer` (train, load, tokenize once for every run).
"""
