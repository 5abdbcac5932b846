using Analytics.Detection.Scoring;
using Analytics.Store;
using Analytics.Submission;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Analytics.Limits;

/// <summary>Wires dynamic limits into a host: the book in front of the static one, the policy, the pull loop.</summary>
public static class LimitServices
{
    /// <summary>
    /// Registers <see cref="DynamicLimitBook"/> as the listener's <see cref="ILimitBook"/> (call before
    /// AddSubmission), <see cref="LimitPolicy"/> as <see cref="IVerdictListener"/> and <see cref="ILimitControl"/>,
    /// and the loop that loads limits at start and pulls other nodes' changes.
    /// </summary>
    public static IServiceCollection AddDynamicLimits(this IServiceCollection services, IConfiguration configuration)
    {
        var options = configuration.GetSection("Limits").Get<LimitPolicyOptions>() ?? new LimitPolicyOptions();
        services.AddSingleton(options);
        services.TryAddSingleton<StaticLimitBook>();
        services.AddSingleton(sp => new DynamicLimitBook(sp.GetRequiredService<StaticLimitBook>(), sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton<ILimitBook>(sp => sp.GetRequiredService<DynamicLimitBook>());
        services.AddSingleton(sp => new LimitPolicy(sp.GetRequiredService<IClickHouseStore>(), sp.GetRequiredService<DynamicLimitBook>(), options,
            sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILoggerFactory>().CreateLogger("Analytics.Limits")));
        services.AddSingleton<IVerdictListener>(sp => sp.GetRequiredService<LimitPolicy>());
        services.AddSingleton<ILimitControl>(sp => sp.GetRequiredService<LimitPolicy>());
        services.AddHostedService<LimitSyncService>();
        return services;
    }
}

/// <summary>Loads the limits in force at start, then every few seconds pulls changes made by other nodes and decays expired limits.</summary>
public sealed partial class LimitSyncService : BackgroundService
{
    private readonly LimitPolicy _policy;
    private readonly LimitPolicyOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    public LimitSyncService(LimitPolicy policy, LimitPolicyOptions options, TimeProvider time, ILogger<LimitSyncService> logger)
    {
        _policy = policy;
        _options = options;
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
