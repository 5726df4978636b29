"""What tlkit's tool commands do, callable from Python: ranking backbones and layers before training
(`model_ranking`), choosing among finished runs by a logged metric (`run_selection`), and exporting a checkpoint for
deployment with its verification (`export`). Engines sit above strategies and datamodules, below the command line."""
