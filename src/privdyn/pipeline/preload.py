"""What the workers' forkserver does once, while training runs (:mod:`privdyn.pipeline.workers`):
import the analysis and report tasks' modules and make the report page's constant parts
(plotly.js gzipped: a quarter of a second), so that every worker forked from it has them."""

from privdyn.pipeline import analysis, dp_audit, reporting, warning  # noqa: F401  (imported for the workers)
from privdyn.report import page

page.plotlyjs_gzip_base64()
page.template_json()
