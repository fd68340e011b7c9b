"""What is trained: the model, its configs, the recipe that trains it, and what that costs.

    gpt.py      the GPT in PyTorch: the model as a lesson, read top to bottom
    gpt_mlx.py  its twin in MLX, module for module, with the same parameter names
    config.py   ModelConfig: the shapes of the four named configs, the parameter count
    recipe.py   TrainConfig: AdamW, warmup and cosine (`lr_at`), clipping, evals, early stop
    cost.py     FLOPs per token (for MFU) and the memory a training step needs

May import: lal_core.errors only (and torch in gpt.py, mlx in gpt_mlx.py). Importing config,
recipe or cost imports no framework.
"""
