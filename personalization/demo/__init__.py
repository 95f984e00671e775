"""Demo and benchmark data: a written demo catalog with readers (`seed_demo`) and synthetic data at scale
with planted structure (`generate_catalog`).

`data/` holds the written catalog and the vocabularies; `catalog.py` loads and checks it, `history.py`
simulates the demo readers' reading, `seed.py` writes the demo, `synthetic.py` plans a synthetic
catalog (plain Python, no Django) and `generate.py` writes it.
"""
