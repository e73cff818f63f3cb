"""The dashboard's pages in menu order; read by the entry file and the screenshot script."""

from __future__ import annotations

__all__ = ["PAGES"]

# (file under app_pages/, title, icon); the first one is the landing page at "/", the
# others live at "/<file name without .py>".
PAGES = (
    ("fleet.py", "Fleet Overview", ":material/hub:"),
    ("trends.py", "Trends", ":material/monitoring:"),
    ("models.py", "Model Insights", ":material/neurology:"),
    ("apps.py", "Apps", ":material/apps:"),
    ("benchmarks.py", "Benchmarks", ":material/speed:"),
    ("health.py", "Health", ":material/health_and_safety:"),
    ("recommendations.py", "Recommendations", ":material/lightbulb:"),
    ("settings.py", "Settings", ":material/settings:"),
)
