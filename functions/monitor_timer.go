package functions

import (
	"context"
	"encoding/json"
	"fmt"
)

// MonitorTimer: every minute, drive submitted jobs to their end.

// MonitorTimerBinding is the trigger binding name of MonitorTimer/function.json.
const MonitorTimerBinding = "timer"

// TimerInfo is Data.timer.
type TimerInfo struct {
	Schedule       json.RawMessage `json:"Schedule"`
	ScheduleStatus *struct {
		Last        string `json:"Last"`
		Next        string `json:"Next"`
		LastUpdated string `json:"LastUpdated"`
	} `json:"ScheduleStatus"`
	IsPastDue bool `json:"IsPastDue"`
}

// DecodeTimerTrigger reads Data.<binding>.
func DecodeTimerTrigger(req *InvokeRequest, binding string) (*TimerInfo, error) {
	raw, err := req.Binding(binding)
	if err != nil {
		return nil, err
	}
	var ti TimerInfo
	if len(raw) > 0 && raw[0] == '"' { // tolerate an object sent as its JSON text
		s, err := DecodeString(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: Data.%s: %v", ErrBadPayload, binding, err)
		}
		raw = json.RawMessage(s)
	}
	if err := json.Unmarshal(raw, &ti); err != nil {
		return nil, fmt.Errorf("%w: Data.%s is not a TimerInfo object: %v", ErrBadPayload, binding, err)
	}
	return &ti, nil
}

func (s *server) monitorTimer(ctx context.Context, inv *Invocation) (*Result, error) {
	ti, err := DecodeTimerTrigger(inv.Request, MonitorTimerBinding)
	if err != nil {
		return nil, err
	}
	mon, err := s.opts.Services.Monitor(ctx)
	if err != nil {
		return nil, err
	}
	if ti.IsPastDue {
		inv.Log.WarnContext(ctx, "monitor run is past due")
	}
	if err := mon.Run(ctx, ti.IsPastDue); err != nil {
		return nil, err
	}
	return &Result{}, nil
}
