package consumer

import "time"

// The deadlines below derive from LeaseDuration, so that a worker configured for slower
// failover also waits longer on slow calls. They are not settings of their own.

// startupTimeout bounds the stream check at start (a loaded machine, a cold connection).
const startupTimeout = 30 * time.Second

// callTimeout bounds every DynamoDB call of the control loop and the consumers (heartbeat
// writes have HeartbeatInterval): a hung call ends, is retried, and never holds a loop.
func (c *Config) callTimeout() time.Duration { return c.LeaseDuration / 2 }

// streamTimeout bounds every Kinesis call. It is longer than callTimeout on purpose: a
// deadline shorter than a loaded stream's answer abandons work the stream still does,
// and the retries that follow add to its load (seen on a saturated local engine). Kinesis
// calls decide nothing about ownership, so their length costs no safety.
func (c *Config) streamTimeout() time.Duration { return 3 * c.LeaseDuration }

// passTimeout bounds one pass of the control loop (the coordinator's shard sync
// included).
func (c *Config) passTimeout() time.Duration { return 3 * c.LeaseDuration }

// heartbeatTimeout bounds each heartbeat write: short enough that a failed write is
// retried (after HeartbeatInterval/8) before the worker's validity ends.
func (c *Config) heartbeatTimeout() time.Duration { return min(c.HeartbeatInterval, c.LeaseDuration/5) }

// passStallLimit is how long the control loop may go without completing a pass
// (successful or not) before Worker.Check and Worker.Alive report it: a pass ends within
// passTimeout and the next starts within PollInterval (at most LeaseDuration/3), so a
// loop this late is hung, not slow.
func (c *Config) passStallLimit() time.Duration { return c.passTimeout() + 3*c.LeaseDuration }

// renewalStallLimit is how long the heartbeat may go without succeeding before
// Worker.Check reports it: the worker was fenced long before (see fenceMargin).
func (c *Config) renewalStallLimit() time.Duration { return 3 * c.LeaseDuration }

// attemptStallLimit is how long the heartbeat loop may go without ending a write
// (successful or failed) before Worker.Alive reports it hung. The loop ends one at most
// HeartbeatInterval + heartbeatTimeout after the previous one (a wait, then a write with
// that deadline; after a failure the wait is HeartbeatInterval/8); the limit allows two
// more intervals for a slow machine. It is at most 1.2 x LeaseDuration (HeartbeatInterval
// is at most LeaseDuration/3, heartbeatTimeout LeaseDuration/5): a hung write shows within
// about a lease duration, well before a hung pass does.
func (c *Config) attemptStallLimit() time.Duration {
	return c.heartbeatTimeout() + 3*c.HeartbeatInterval
}

// fenceMargin is how long before others may take its leases a worker stops acting on
// them: a renewal earns LeaseDuration - fenceMargin of validity (see tenure).
func (c *Config) fenceMargin() time.Duration { return c.LeaseDuration / 5 }

// viewStallAfter is how long the membership view may keep its version before a worker
// reads the whole metadata table instead: the coordinator writes the view on every pass,
// at least once per PollInterval while it works.
func (c *Config) viewStallAfter() time.Duration { return 5 * c.PollInterval / 2 }
