"""Generation: samples of a prompt, drawn together and streamed token by token.

    sampling.py  the sampling loop for every backend (`Generation`, `stream`), the draw itself
                 (temperature, top-k, top-p, the row's own seed), and loading a checkpoint
                 to sample from (`load_for_sampling`)
    controls.py  the sampling controls, one checked value every front end shares

May import: errors, model, data, backends, runs.
"""
