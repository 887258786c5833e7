"""``python -m loss_rl.cli``: the ``loss-rl`` command line."""

from loss_rl.cli import main

if __name__ == "__main__":
    main()
