"""The modeling stage: what is learned and how it is scored.

``registry`` names the architectures, encoders and losses a config may use, without torch (configs
validate without the model zoo); ``models`` builds SMP UNets and the hierarchical UPerNet over those
encoders, ``losses`` the Dice/Focal/hierarchical losses, ``metrics`` the dataset-level confusion
matrix and its scores; ``residual`` the classical floor for thin damage (a residual-threshold filter, its k
chosen on validation) and ``thin`` the thin-damage scores beside it (union IoU, clIoU at 4 px), both without
torch, their state summable counts (``counts``); ``thin_prior`` the thin recipe's factor on the thin classes'
probabilities, chosen on validation the same way. Depends on ``heritage.data`` only; imports nothing itself.
"""
