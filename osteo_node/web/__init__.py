"""The node's web application for the fracture liaison service (FLS): worklist, study page,
status workflow, node status, health and metrics (``osteo_node.web.app.create_app``)."""
