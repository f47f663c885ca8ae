"""Pretraining regimes for chest X-ray backbones (after Awatramani et al., "In-domain Model Pre-training for
Chest X-Rays"): random, ImageNet (a local timm-named
file), in-domain supervised pretraining (view, sex, age) and Barlow Twins; fine-tuning for pathologies under any label
policy with optional auxiliary heads; and the init × label policy × aux × seed grid with one results table.

Modules: ``methods`` (registered pretraining methods), ``inits`` (initialisations by name), ``pretrain`` (the
pretraining stage), ``finetune`` (pathology fine-tuning), ``grid`` (the study grid), ``data`` (image inputs).
"""
