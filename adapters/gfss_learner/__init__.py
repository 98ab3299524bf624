"""gfss-learner: a trainable generalized-FSS learner (base training, then novel registration from supports).

config.py      its settings (training resolution, head widths, steps, learning rate)
model.py       dense features of a frozen backbone, the light segmentation head and its cosine classifier,
               masked average pooling (novel-class prototypes)
training.py    training on a fold's base classes (DIaM's base training), optionally mixed with extra
               (image, label) samples such as refined synthetic data, checkpointed and resumable
checkpoint.py  checkpoint files (torch, loadable with weights_only=True)
commands.py    `fssbench train gfss-learner` (contributed to the CLI through the registry's command hook)
adapter.py     the evaluation adapter (`--method gfss-learner`)
"""
