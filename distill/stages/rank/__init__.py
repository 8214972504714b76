"""The learned ranking stage: which catalog products go in the same basket as a given one.

labels.py splits the shop's own interactions into a part that builds behaviour features and a part that
supplies labels; pool.py generates candidates from every evidence source; features.py turns each candidate
pair into a feature row; model.py fits a LambdaRank model on the label part (or falls back to a model-free
ordering) and calibrates its output; stage.py runs the whole stage; gate.py is the nightly quality gate.
"""
