package config

// FieldManager is the server-side-apply field manager of everything warmpool applies from its
// config: NodePools and node classes, engine DaemonSets, headroom Deployments, CapacityBuffers
// and the PriorityClass. One manager, so any warmpool controller can take over or prune what
// another applied; only the busy annotation has a manager of its own (see the scaling
// controller's BusyFieldManager).
const FieldManager = "warmpool"
