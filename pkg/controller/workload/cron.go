package workload

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// NextWarm is when to warm a CronJob's images for its next run after now,
// and that run's time. Schedules are parsed as Kubernetes' CronJob
// controller parses them (robfig/cron's standard five fields, with
// timeZone as a TZ= prefix), so the runs are the ones it will start.
func NextWarm(schedule string, timeZone *string, lead time.Duration, now time.Time) (warmAt, run time.Time, err error) {
	spec := schedule
	if timeZone != nil && *timeZone != "" {
		if _, err := time.LoadLocation(*timeZone); err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("spec.timeZone %q: %w", *timeZone, err)
		}
		spec = "TZ=" + *timeZone + " " + schedule
	}
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("spec.schedule %q: %w", schedule, err)
	}
	run = sched.Next(now)
	if run.IsZero() {
		return time.Time{}, time.Time{}, fmt.Errorf("spec.schedule %q never runs", schedule)
	}
	return run.Add(-lead), run, nil
}
