"""The pairwise judge: which of two answers (baseline, candidate) to the same test example is the better summary.

pairs (what a judge is asked, the both-orders rule, the records), run (concurrent, paced, retried, checkpointed),
local (MiniLM embedding similarity, not an LLM), vertex (the Gen AI evaluation service's pairwise summarization
quality autorater), summary (win rate with CI, order disagreement, agreement with ROUGE-L), report (section, table,
plot), step (judge two result sets and save the outputs).
"""
