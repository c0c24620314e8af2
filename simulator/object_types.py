"""OData types of the directory objects Graph lists in directoryObject collections (members, owners)."""

USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
DEVICE_TYPE = "#microsoft.graph.device"
SP_TYPE = "#microsoft.graph.servicePrincipal"
APP_TYPE = "#microsoft.graph.application"
