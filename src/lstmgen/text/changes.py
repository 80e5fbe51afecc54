"""What a cleaning rule did to a file: how many times it changed something, and the first few changes
in context, for ``lstmgen inspect`` and a run's config.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXAMPLES = 3  # changes shown in context per rule and file

CONTEXT = 20  # characters shown on each side of a change


@dataclass
class Changes:
    """One rule's changes to one file: a count (of lines, spans, paragraphs or characters, as the rule
    says) and the first ``EXAMPLES`` of them, each as ``{"before", "old", "new", "after"}``."""

    count: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)

    def add(self, text: str, start: int, end: int, new: str = "", *, count: int = 1) -> None:
        """Record that ``text[start:end]`` became ``new`` (removed when ``new`` is "")."""
        self.count += count
        if len(self.examples) < EXAMPLES:
            line_start = text.rfind("\n", 0, start) + 1
            line_end = text.find("\n", end)
            line_end = len(text) if line_end < 0 else line_end
            self.examples.append({"before": text[max(line_start, start - CONTEXT):start], "old": text[start:end],
                                  "new": new, "after": text[end:min(line_end, end + CONTEXT)]})

    def as_dict(self) -> dict:
        return {"count": self.count, "examples": self.examples}
