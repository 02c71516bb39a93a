"""promptdistill: inject the knowledge of documents into an LLM's weights by prompt distillation.

Kujanpää, Marttinen, Valpola, Ilin, "Efficient Knowledge Injection in LLMs via
Self-Distillation", TMLR 2025.
"""

__version__ = "0.1.0"
