"""Chat prompts shared by the benchmarks that run the embedded model (same questions, comparable runs)."""

PROMPTS = [
    "Explain how a rainbow forms.",
    "Write a short poem about the sea.",
    "What is the capital of Japan, and what is it known for?",
    "Describe how to make a cup of tea.",
    "Give three tips for learning a new language.",
    "What does a compiler do?",
    "Summarise the plot of Romeo and Juliet.",
    "Why is the sky blue?",
    "List four planets of the solar system.",
    "How do bees make honey?",
    "What is the difference between weather and climate?",
    "Write a haiku about autumn leaves.",
    "Why do we need sleep?",
    "Explain what a prime number is.",
    "Suggest a name for a bakery.",
    "How does a bicycle stay upright?",
]
