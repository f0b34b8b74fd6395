"""The paper's experiments on top of the pipeline: crops (Table 4), units (Sec. 5), discovery (Sec. 4.2), demo."""
