package testenv

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// CounterByAttribute collects reader and sums the int64 counter name by the value of its attribute key (a data point
// without the attribute is summed under "").
func CounterByAttribute(t testing.TB, reader *sdkmetric.ManualReader, name, key string) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if m.Name != name || !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				v, _ := dp.Attributes.Value(attribute.Key(key))
				out[v.AsString()] += dp.Value
			}
		}
	}
	return out
}

// CounterSum is the int64 counter name summed over every attribute set.
func CounterSum(t testing.TB, reader *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	var n int64
	for _, v := range CounterByAttribute(t, reader, name, "") {
		n += v
	}
	return n
}
