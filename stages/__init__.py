"""One module per DVC stage: `python -m stages.<name>`. Stages do not import Prefect."""
