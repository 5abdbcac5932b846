using Analytics.Store;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Analytics.Limits;

public static class LimitServices
{
    /// <summary>
    /// The <c>Limits</c> section (validated at start), the <see cref="LimitBook"/> every enforcement point
    /// reads, and — with <paramref name="dynamic"/> — the policy that turns verdicts and overrides into
    /// limits (<see cref="IVerdictListener"/>, <see cref="ILimitControl"/>) with the loop that loads limits
    /// at start and pulls other nodes' changes.
    /// </summary>
    public static IServiceCollection AddLimits(this IServiceCollection services, bool dynamic = true)
    {
        services.AddSectionOptions<LimitsOptions>(LimitsOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<LimitsOptions>, LimitsOptionsValidator>());
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<LimitBook>();
        services.TryAddSingleton<ILimitBook>(sp => sp.GetRequiredService<LimitBook>());
        if (!dynamic)
        {
            return services;
        }

        services.TryAddSingleton(sp => new LimitRecords(sp.GetRequiredService<IClickHouseStore>(), sp.GetRequiredService<IOptions<LimitsOptions>>().Value.Dynamic.Node));
        services.TryAddSingleton(sp => new LimitPolicy(sp.GetRequiredService<LimitRecords>(), sp.GetRequiredService<LimitBook>(),
            sp.GetRequiredService<IOptions<LimitsOptions>>().Value.Dynamic, sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILoggerFactory>().CreateLogger("Analytics.Limits")));
        services.AddSingleton<IVerdictListener>(sp => sp.GetRequiredService<LimitPolicy>());
        services.TryAddSingleton<ILimitControl>(sp => sp.GetRequiredService<LimitPolicy>());
        services.AddHostedService<LimitSyncService>();
        return services;
    }
}

/// <summary>Loads the limits in force at start, then every few seconds pulls changes made by other nodes and decays expired limits.</summary>
internal sealed partial class LimitSyncService : BackgroundService
{
    private readonly LimitPolicy _policy;
    private readonly DynamicLimitOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    public LimitSyncService(LimitPolicy policy, IOptions<LimitsOptions> options, TimeProvider time, ILogger<LimitSyncService> logger)
    {
        _policy = policy;
        _options = options.Value.Dynamic;
        _time = time;
        _logger = logger;
    }

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        // Limits in force are enforced before the first connection is accepted.
        await _policy.PullAsync(cancellationToken);
        await base.StartAsync(cancellationToken);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(_options.PullInterval, _time);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                await _policy.PullAsync(stoppingToken);
                _policy.Decay();
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                LogPullFailed(_logger, ex);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not pull limits from the store; keeping the ones in force")]
    private static partial void LogPullFailed(ILogger logger, Exception exception);
}
