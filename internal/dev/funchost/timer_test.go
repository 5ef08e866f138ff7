package funchost

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spomig/spomig/internal/dev/azurite"
)

func TestTimerTrigger(t *testing.T) {
	t.Parallel()
	hostID := azurite.UniqueName("timerhost")
	app := newTestApp(t, false, map[string]string{
		"TickFn":    `{"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"*/1 * * * * *"}]}`,
		"HourlyFn":  `{"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"%TESTAPP_HOURLY%"}]}`,
		"StartupFn": `{"bindings":[{"type":"timerTrigger","direction":"in","name":"t","schedule":"0 0 0 1 1 *","runOnStartup":true,"useMonitor":false}]}`,
	}, map[string]string{"AzureFunctionsWebHost__hostid": hostID, "TESTAPP_HOURLY": "0 0 * * * *"})
	app.vars["version"] = DefaultHostVersion

	// A status saying the 1-hour-ago occurrence was never run: the host must run it at start, past due.
	last := time.Now().In(time.Local).Truncate(time.Hour).Add(-2 * time.Hour)
	next := last.Add(time.Hour)
	status, _ := json.Marshal(scheduleStatus{Last: last, Next: next, LastUpdated: last})
	uploadBlob(t, hostsContainer, "timers/"+hostID+"/Host.Functions.HourlyFn/status", status, nil)
	app.vars["last"] = last.Format("2006-01-02T15:04:05-07:00")
	app.vars["next"] = next.Format("2006-01-02T15:04:05-07:00")

	h := app.start(Options{})

	t.Run("past due at start", func(t *testing.T) {
		recs := app.waitRecords("/HourlyFn", 1, 10*time.Second)
		app.matchFixture("timer_pastdue_request.json", envelopeBody(t, recs[0]))
		waitFor(t, 5*time.Second, "the status blob to be updated", func() bool {
			var st scheduleStatus
			if json.Unmarshal(readBlob(t, hostsContainer, "timers/"+hostID+"/Host.Functions.HourlyFn/status"), &st) != nil {
				return false
			}
			return st.Last.After(next) && st.Next.Equal(st.Last.Truncate(time.Hour).Add(time.Hour))
		})
	})

	t.Run("every second", func(t *testing.T) {
		recs := app.waitRecords("/TickFn", 2, 10*time.Second)
		app.matchFixture("timer_request.json", requestView(t, recs[0]))
		app.matchFixture("timer_request.json", requestView(t, recs[1]))
	})

	t.Run("run on startup", func(t *testing.T) {
		recs := app.waitRecords("/StartupFn", 1, 10*time.Second)
		data := envelopeBody(t, recs[0])["Data"].(map[string]any)["t"].(map[string]any)
		if data["IsPastDue"] != false || data["ScheduleStatus"] != nil {
			t.Errorf("runOnStartup invocation data = %v", data)
		}
	})

	t.Run("admin endpoint", func(t *testing.T) {
		before := len(app.records("/HourlyFn"))
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, h.URL()+"/admin/functions/HourlyFn?code="+h.MasterKey(), strings.NewReader(`{"input":""}`))
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("admin: %d", resp.StatusCode)
		}
		recs := app.waitRecords("/HourlyFn", before+1, 10*time.Second)
		data := envelopeBody(t, recs[before])["Data"].(map[string]any)["timer"].(map[string]any)
		if data["IsPastDue"] != false || data["ScheduleStatus"] == nil {
			t.Errorf("admin invocation data = %v, want IsPastDue false and the current status", data)
		}
		if !strings.Contains(app.logs.String(), "Executing 'Functions.HourlyFn' (Reason='This function was programmatically called via the host APIs.'") {
			t.Error("admin invocation not logged with the host's reason")
		}
	})
}

func TestSchedules(t *testing.T) {
	base := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		expr string
		next time.Time
		cron bool
	}{
		{"*/1 * * * * *", base.Add(time.Second), true},
		{"0 */5 * * * *", base.Add(5 * time.Minute), true},
		{"30 9 * * 1-5", time.Date(2026, 12, 7, 9, 30, 0, 0, time.UTC), true}, // 5 fields: minute first; Mon
		{"0 0 12 * * Sun", time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC), true},
		{"01:00:00", base.Add(time.Hour), false},
	} {
		s, isCron, err := parseSchedule(tc.expr, time.UTC)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if got := s.Next(base); !got.Equal(tc.next) || isCron != tc.cron {
			t.Errorf("%s: next %v cron %v, want %v %v", tc.expr, got, isCron, tc.next, tc.cron)
		}
	}
	for _, bad := range []string{"", "* * *", "61 * * * * *", "every day", "0 0 * * * * * *"} {
		if _, _, err := parseSchedule(bad, time.UTC); err == nil {
			t.Errorf("parseSchedule(%q) accepted", bad)
		}
	}
}
