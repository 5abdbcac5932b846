using System.Security.Cryptography;
using System.Text;
using Analytics.Detection.Scoring;
using Analytics.Events;
using Analytics.Store;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Analytics.Cli.Hosting;

/// <summary>Section <c>Metrics</c>.</summary>
internal sealed class MetricsOptions
{
    public const string SectionName = "Metrics";

    /// <summary>Serve <c>/metrics</c>. Default true.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>
    /// When set, a scrape must send <c>Authorization: Bearer TOKEN</c> (Prometheus <c>authorization</c>
    /// / <c>bearer_token_file</c>). Default empty: open to whoever reaches the console's HTTP endpoint.
    /// </summary>
    public string? BearerToken { get; set; }

    /// <summary>How long the count of limits in force (a store query) is reused between scrapes. Default 10 s.</summary>
    public TimeSpan LimitsCacheFor { get; set; } = TimeSpan.FromSeconds(10);
}

/// <summary>
/// <c>/metrics</c> in Prometheus text format. <see cref="AddMetricsEndpoint"/> registers the registry and wraps
/// the registered <see cref="IEventPublisher"/> so the listener's events are counted on their way to the
/// sink; <see cref="MapMetrics"/> maps the endpoint and reads the sink, the scorer and the limits table
/// at scrape time, each only if it is registered.
/// </summary>
public static class Metrics
{
    public const string Path = "/metrics";
    private const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>
    /// Call after <see cref="IEventPublisher"/> is registered (it is decorated in place). Also registers a
    /// <see cref="IVerdictListener"/> that counts flags by class: hand <c>GetServices&lt;IVerdictListener&gt;()</c>
    /// to the <see cref="Scorer"/>.
    /// </summary>
    public static IServiceCollection AddMetricsEndpoint(this IServiceCollection services)
    {
        services.AddSectionOptions<MetricsOptions>(MetricsOptions.SectionName);
        services.AddSingleton<MetricsRegistry>();
        services.AddSingleton<SmtpMetrics>();
        services.AddSingleton<FlagMetrics>();
        services.AddSingleton<IVerdictListener>(sp => sp.GetRequiredService<FlagMetrics>());

        var publisher = services.LastOrDefault(d => d.ServiceType == typeof(IEventPublisher));
        if (publisher is not null)
        {
            services.Remove(publisher);
            services.AddSingleton<IEventPublisher>(sp => new CountingEventPublisher(Resolve(sp, publisher), sp.GetRequiredService<SmtpMetrics>()));
        }

        return services;
    }

    /// <summary>Maps <c>GET /metrics</c>. Returns the endpoint so the host can add a host filter or authorization.</summary>
    public static IEndpointConventionBuilder MapMetrics(this WebApplication app)
    {
        var services = app.Services;
        var registry = services.GetRequiredService<MetricsRegistry>();
        var options = services.GetRequiredService<IOptions<MetricsOptions>>().Value;

        // Created here so that sessions, replies and flags are exposed (as empty families) even before
        // the first event, and the decorator's counters exist when the listener starts.
        services.GetRequiredService<SmtpMetrics>();
        services.GetRequiredService<FlagMetrics>();
        AddSinkCollector(registry, services.GetService<EventSink>());
        AddScorerCollector(registry, services);
        AddQueueCollector(registry, services.GetService<Analytics.Submission.Delivery.DeliveryQueue>());
        AddListenerCollector(registry, services.GetService<Analytics.Submission.SubmissionListener>());
        AddLimitsCollector(registry, services.GetService<IClickHouseStore>(), options, services.GetService<TimeProvider>() ?? TimeProvider.System);

        var token = string.IsNullOrEmpty(options.BearerToken) ? null : Encoding.UTF8.GetBytes("Bearer " + options.BearerToken);
        return app.MapGet(Path, async (HttpContext http) =>
        {
            if (!options.Enabled)
            {
                return Results.NotFound();
            }

            if (token is not null &&
                !CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(http.Request.Headers.Authorization.ToString()), token))
            {
                return Results.Unauthorized();
            }

            return Results.Text(await registry.ScrapeAsync(http.RequestAborted), ContentType);
        });
    }

    private static IEventPublisher Resolve(IServiceProvider sp, ServiceDescriptor descriptor) =>
        (IEventPublisher)(descriptor.ImplementationInstance
            ?? descriptor.ImplementationFactory?.Invoke(sp)
            ?? ActivatorUtilities.CreateInstance(sp, descriptor.ImplementationType!));

    private static void AddSinkCollector(MetricsRegistry registry, EventSink? sink)
    {
        if (sink is null)
        {
            return;
        }

        registry.Collected("analytics_events_published_total", "counter", "Events handed to the sink.");
        registry.Collected("analytics_events_inserted_total", "counter", "Events inserted into ClickHouse.");
        registry.Collected("analytics_events_spooled_total", "counter", "Events written to the disk spool because the store failed.");
        registry.Collected("analytics_events_spilled_total", "counter", "Events written to the disk spool because the in-memory queue was full.");
        registry.Collected("analytics_events_replayed_total", "counter", "Spooled events replayed into ClickHouse.");
        registry.Collected("analytics_events_quarantined_total", "counter", "Events set aside as unreadable.");
        registry.Collected("analytics_events_insert_failures_total", "counter", "Failed inserts (each retried or spooled).");
        registry.Collected("analytics_events_spool_files", "gauge", "Batches waiting in the spool.");
        registry.Collected("analytics_events_lag_seconds", "gauge", "Age of the oldest event not yet in ClickHouse.");
        registry.Collected("analytics_store_healthy", "gauge", "1 when the last insert succeeded.");
        registry.Collected("analytics_events_refused_total", "counter", "Events refused: the queue was full and the disk refused the spool (or malformed).");
        registry.Collected("analytics_events_spool_failures_total", "counter", "Spool writes the disk refused (each retried).");
        registry.Collected("analytics_events_held", "gauge", "Events in batches neither the store nor the disk took yet, held in memory.");
        registry.Collected("analytics_events_recovered_total", "counter", "Events kept from spill segments a crash left open.");
        registry.Collected("analytics_events_quarantined_files", "gauge", "Files this sink set aside in the spool's quarantine folder.");
        registry.Collected("analytics_event_loop_errors_total", "counter", "Errors the event loop caught and survived.");
        registry.Collected("analytics_events_journaled_total", "counter", "Events written to a batch's journal because a reply that accepts a message waited for them.");
        registry.Collected("analytics_events_durable_wait_timeouts_total", "counter", "Replies that accepted a message after waiting the longest time for its events to reach the journal, the spool or the store.");
        registry.Collected("analytics_event_sink_health", "gauge", "0 healthy, 1 store down (spooling), 2 spool failing (holding in memory, then refusing).");
        registry.AddCollector(_ =>
        {
            var s = sink.Stats;
            return Task.FromResult<IEnumerable<Sample>>(
            [
                Sample.Of("analytics_events_published_total", s.Published),
                Sample.Of("analytics_events_inserted_total", s.Inserted),
                Sample.Of("analytics_events_spooled_total", s.Spooled),
                Sample.Of("analytics_events_spilled_total", s.Spilled),
                Sample.Of("analytics_events_replayed_total", s.Replayed),
                Sample.Of("analytics_events_quarantined_total", s.Quarantined),
                Sample.Of("analytics_events_insert_failures_total", s.InsertFailures),
                Sample.Of("analytics_events_spool_files", s.SpoolFiles),
                Sample.Of("analytics_events_lag_seconds", s.Lag.TotalSeconds),
                Sample.Of("analytics_store_healthy", s.StoreHealthy ? 1 : 0),
                Sample.Of("analytics_events_refused_total", s.Refused),
                Sample.Of("analytics_events_spool_failures_total", s.SpoolFailures),
                Sample.Of("analytics_events_held", s.Held),
                Sample.Of("analytics_events_recovered_total", s.Recovered),
                Sample.Of("analytics_events_quarantined_files", s.QuarantinedFiles),
                Sample.Of("analytics_event_loop_errors_total", s.LoopErrors),
                Sample.Of("analytics_events_journaled_total", s.Journaled),
                Sample.Of("analytics_events_durable_wait_timeouts_total", s.DurableTimeouts),
                Sample.Of("analytics_event_sink_health", (int)s.Health),
            ]);
        });
    }

    // The queue keeps its own counts in memory (read here, never copied on a timer), like the sink.
    private static void AddQueueCollector(MetricsRegistry registry, Analytics.Submission.Delivery.DeliveryQueue? queue)
    {
        if (queue is null)
        {
            return;
        }

        registry.Collected("analytics_queue_messages", "gauge", "Messages in the delivery queue, by state (active: being or about to be tried; deferred: waiting for a retry; held).");
        registry.Collected("analytics_queue_bytes", "gauge", "Bytes of queued mail.");
        registry.Collected("analytics_queue_oldest_seconds", "gauge", "Age of the oldest queued message.");
        registry.Collected("analytics_delivery_recipients_total", "counter", "Recipient delivery attempts since start, by outcome (delivered, bounced, deferred, expired, discarded).");
        registry.Collected("analytics_delivery_deferrals_total", "counter", "Message attempts that ended with a recipient still owed (a retry scheduled).");
        registry.Collected("analytics_delivery_dsn_total", "counter", "Delivery status notifications queued to senders.");
        registry.Collected("analytics_queue_refused_total", "counter", "MAIL or DATA refused with 452 4.3.1 because the spool was at its quota or short of free space.");
        registry.AddCollector(_ =>
        {
            var s = queue.Stats();
            return Task.FromResult<IEnumerable<Sample>>(
            [
                Sample.Of("analytics_queue_messages", s.Active, ("state", "active")),
                Sample.Of("analytics_queue_messages", s.Deferred, ("state", "deferred")),
                Sample.Of("analytics_queue_messages", s.Held, ("state", "held")),
                Sample.Of("analytics_queue_bytes", s.Bytes),
                Sample.Of("analytics_queue_oldest_seconds", s.OldestAge.TotalSeconds),
                Sample.Of("analytics_delivery_recipients_total", s.Delivered, ("outcome", "delivered")),
                Sample.Of("analytics_delivery_recipients_total", s.Bounced, ("outcome", "bounced")),
                Sample.Of("analytics_delivery_recipients_total", s.TempFailures, ("outcome", "deferred")),
                Sample.Of("analytics_delivery_recipients_total", s.Expired, ("outcome", "expired")),
                Sample.Of("analytics_delivery_recipients_total", s.Discarded, ("outcome", "discarded")),
                Sample.Of("analytics_delivery_deferrals_total", s.Deferrals),
                Sample.Of("analytics_delivery_dsn_total", s.DsnQueued),
                Sample.Of("analytics_queue_refused_total", s.Refused),
            ]);
        });
    }

    // The listener's own gauges: what DATA holds on disk right now (never in memory), and what its cap refused.
    private static void AddListenerCollector(MetricsRegistry registry, Analytics.Submission.SubmissionListener? listener)
    {
        if (listener is null)
        {
            return;
        }

        registry.Collected("analytics_smtp_data_in_flight_bytes", "gauge", "Bytes of messages being received (DATA not finished), all sessions; on the spool's disk.");
        registry.Collected("analytics_smtp_data_in_flight_peak_bytes", "gauge", "Highest analytics_smtp_data_in_flight_bytes since start.");
        registry.Collected("analytics_smtp_data_refused_total", "counter", "Messages answered 452 4.3.1 because the bytes in flight were at Limits:Session:MaxDataInFlightBytes.");
        registry.AddCollector(_ => Task.FromResult<IEnumerable<Sample>>(
        [
            Sample.Of("analytics_smtp_data_in_flight_bytes", listener.DataBytesInFlight),
            Sample.Of("analytics_smtp_data_in_flight_peak_bytes", listener.DataBytesInFlightPeak),
            Sample.Of("analytics_smtp_data_refused_total", listener.DataRefusedOverCap),
        ]));
    }

    private static void AddScorerCollector(MetricsRegistry registry, IServiceProvider services)
    {
        // The scorer runs as a hosted service; it may be registered as itself or only as IHostedService.
        var scorer = services.GetService<ScorerService>() ?? services.GetServices<IHostedService>().OfType<ScorerService>().FirstOrDefault();
        if (scorer is null)
        {
            return;
        }

        registry.Collected("analytics_scoring_pass_seconds", "gauge", "Duration of the last scoring pass, by phase (features, model, total).");
        registry.Collected("analytics_scoring_entities", "gauge", "Entities scored in the last pass.");
        registry.Collected("analytics_scoring_flagged", "gauge", "Entities flagged in the last pass, by class.");
        registry.Collected("analytics_scoring_last_pass_timestamp_seconds", "gauge", "As-of time of the last scoring pass (Unix seconds).");
        registry.AddCollector(_ =>
        {
            if (scorer.LastPass is not { } pass)
            {
                return Task.FromResult(Enumerable.Empty<Sample>());
            }

            var samples = new List<Sample>
            {
                Sample.Of("analytics_scoring_pass_seconds", pass.FeatureTime.TotalSeconds, ("phase", "features")),
                Sample.Of("analytics_scoring_pass_seconds", pass.ModelTime.TotalSeconds, ("phase", "model")),
                Sample.Of("analytics_scoring_pass_seconds", pass.Total.TotalSeconds, ("phase", "total")),
                Sample.Of("analytics_scoring_entities", pass.Entities, ("model", pass.ModelVersion)),
                Sample.Of("analytics_scoring_last_pass_timestamp_seconds", new DateTimeOffset(DateTime.SpecifyKind(pass.AsOf, DateTimeKind.Utc)).ToUnixTimeMilliseconds() / 1000.0),
            };
            samples.AddRange(pass.Verdicts.Where(v => v.Flagged).GroupBy(v => v.Class).OrderBy(g => g.Key)
                .Select(g => Sample.Of("analytics_scoring_flagged", g.Count(), ("class", g.Key.ToText()))));
            return Task.FromResult<IEnumerable<Sample>>(samples);
        });
    }

    // Limits in force are what every node pulls from the shared `limits` table, so the count comes
    // from there: the same answer on every node of a cluster. Cached: a scrape every few seconds must
    // not turn into a FINAL scan every few seconds.
    private sealed record LimitsCount(string Kind, string Level, double Limits);

    private const string LimitsInForce = """
        SELECT toString(entity_kind) AS kind, toString(level) AS level, count() AS limits
        FROM limits FINAL
        WHERE (level != 'normal' OR blocked OR auth_locked) AND (expires_at IS NULL OR expires_at > now64(3))
        GROUP BY kind, level
        ORDER BY kind, level
        """;

    private static void AddLimitsCollector(MetricsRegistry registry, IClickHouseStore? store, MetricsOptions options, TimeProvider time)
    {
        if (store is null)
        {
            return;
        }

        registry.Collected("analytics_limits_in_force", "gauge", "Limits in force (not normal, not expired), by entity kind and level.");
        registry.Collected("analytics_limits_query_ok", "gauge", "1 when the limits table could be read at the last refresh.");
        IReadOnlyList<Sample> cached = [];
        var cachedAt = DateTimeOffset.MinValue;
        var gate = new SemaphoreSlim(1, 1);
        registry.AddCollector(async cancellationToken =>
        {
            await gate.WaitAsync(cancellationToken);
            try
            {
                if (time.GetUtcNow() - cachedAt < options.LimitsCacheFor)
                {
                    return cached;
                }

                var samples = new List<Sample>();
                try
                {
                    using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                    timeout.CancelAfter(TimeSpan.FromSeconds(5));
                    await foreach (var row in store.QueryAsync<LimitsCount>(LimitsInForce, null, timeout.Token))
                    {
                        samples.Add(Sample.Of("analytics_limits_in_force", row.Limits, ("kind", row.Kind), ("level", row.Level)));
                    }

                    samples.Add(Sample.Of("analytics_limits_query_ok", 1));
                }
                catch (Exception ex) when (ex is ClickHouseException or OperationCanceledException or StoreUnavailableException && !cancellationToken.IsCancellationRequested)
                {
                    // No limits table yet (older schema) or a store that is down: say so, do not fail the scrape.
                    samples.Add(Sample.Of("analytics_limits_query_ok", 0));
                }

                cached = samples;
                cachedAt = time.GetUtcNow();
                return cached;
            }
            finally
            {
                gate.Release();
            }
        });
    }
}
