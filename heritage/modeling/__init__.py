"""The modeling stage: what is learned and how it is scored.

``registry`` names the architectures, encoders and losses a config may use, without torch (configs
validate without the model zoo); ``models`` builds SMP UNets and the hierarchical UPerNet over those
encoders, ``losses`` the Dice/Focal/hierarchical losses, ``metrics`` the dataset-level confusion
matrix and its scores. Depends on ``heritage.data.taxonomy`` only; imports nothing itself.
"""
