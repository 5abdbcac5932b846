using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Analytics.Detection.Scoring;

/// <summary>The scoring loop inside <c>serve</c>: one pass every <see cref="DetectionOptions.ScoreInterval"/>.</summary>
public sealed partial class ScorerService : BackgroundService
{
    private readonly Scorer _scorer;
    private readonly DetectionOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    public ScorerService(Scorer scorer, IOptions<DetectionOptions> options, TimeProvider time, ILogger<ScorerService> logger)
    {
        _scorer = scorer;
        _options = options.Value;
        _time = time;
        _logger = logger;
    }

    /// <summary>The last completed pass, for metrics and the console.</summary>
    public ScoringPass? LastPass { get; private set; }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!_options.Enabled)
        {
            return;
        }

        using var timer = new PeriodicTimer(_options.ScoreInterval, _time);
        do
        {
            try
            {
                LastPass = await _scorer.ScoreOnceAsync(_time.GetUtcNow().UtcDateTime, _options.FirstPassLookback, stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                // A failed pass (store down, bad row) must not stop the next one.
                LogPassFailed(_logger, ex);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Scoring pass failed; retrying at the next interval")]
    private static partial void LogPassFailed(ILogger logger, Exception exception);
}
