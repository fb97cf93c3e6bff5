"""The course's commands, built on the helpers in `utils`; the notebooks do not import them.

- `python -m utils.segment SOURCE --out DIR`: the production job (`utils.tools.segment`)
- `python -m utils.tools.benchmark`: every approach measured side by side (`make bench`)
- `python -m utils.tools.workshop_check`: ready to teach offline? (`make check-workshop`)
- `python -m utils.tools.prefetch`: download the model and images for a workshop (`make prefetch`)
- `python -m utils.tools.exercises`: the learner notebooks from their solutions (`make exercises`)
"""
