using Analytics.Events;
using Analytics.Limits;
using Analytics.Store;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Analytics.Policy;

public static class PolicyServices
{
    /// <summary>
    /// The <c>Policy</c> section (validated at start) and, for whichever of its parts is configured, the
    /// Postfix policy service, the Dovecot policy server and the mail log reader, over the process's
    /// limit book and event sink. The host registers <see cref="ILimitBook"/> (<c>AddLimits</c>) and
    /// <see cref="IEventPublisher"/>.
    /// </summary>
    public static IServiceCollection AddPolicyServices(this IServiceCollection services)
    {
        services.AddSectionOptions<PolicyOptions>(PolicyOptions.SectionName);
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(sp => new PolicyEngine(sp.GetRequiredService<IOptions<PolicyOptions>>().Value, sp.GetRequiredService<IOptions<LimitsOptions>>().Value,
            sp.GetRequiredService<ILimitBook>(), sp.GetRequiredService<IEventPublisher>(), sp.GetRequiredService<TimeProvider>()));
        services.AddHostedService(sp => new PolicyHostedService(sp.GetRequiredService<PolicyEngine>(), sp.GetRequiredService<ILoggerFactory>()));
        return services;
    }
}

/// <summary>
/// The engine beside Postfix and Dovecot, for as long as the host runs: the configured listeners open
/// at start (each says where, in the log), the mail log is followed from its current end, and on stop
/// the listeners close (Postfix and Dovecot then take their default actions: mail keeps flowing).
/// </summary>
public sealed partial class PolicyHostedService : IHostedService, IAsyncDisposable
{
    private readonly PolicyEngine _engine;
    private readonly ILoggerFactory _logging;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private PostfixPolicyServer? _postfix;
    private DovecotPolicyServer? _dovecot;
    private Task _mailLog = Task.CompletedTask;

    internal PolicyHostedService(PolicyEngine engine, ILoggerFactory logging)
    {
        _engine = engine;
        _logging = logging;
        _logger = logging.CreateLogger("Analytics.Policy");
    }

    /// <summary>
    /// The engine outside a host (benchmarks, tests): the given options, limit book and event publisher.
    /// Start it with <see cref="StartAsync"/>; dispose it to stop.
    /// </summary>
    public static PolicyHostedService Create(PolicyOptions options, LimitsOptions limits, ILimitBook book, IEventPublisher events, TimeProvider time, ILoggerFactory logging) =>
        new(new PolicyEngine(options, limits, book, events, time), logging);

    /// <summary>Where the Postfix policy service listens (<c>unix:/path</c> or <c>HOST:PORT</c>), null when off.</summary>
    public string? PostfixAddress => _postfix?.Address;

    /// <summary>The URL for Dovecot's <c>auth_policy_server_url</c>, null when off.</summary>
    public string? DovecotUrl => _dovecot?.Url;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var options = _engine.Options;
        if (options.PostfixEnabled)
        {
            _postfix = new PostfixPolicyServer(_engine, PolicyEndpoint.Parse(options.PostfixEndpoint!, allowUnix: true), _logging.CreateLogger("Analytics.Policy.Postfix"));
            _postfix.Start();
            LogPostfix(_logger, _postfix.Address);
        }

        if (options.DovecotEnabled)
        {
            _dovecot = new DovecotPolicyServer(_engine, PolicyEndpoint.Parse(options.DovecotEndpoint!, allowUnix: false), _logging.CreateLogger("Analytics.Policy.Dovecot"));
            _dovecot.Start();
            LogDovecot(_logger, _dovecot.Url);
        }

        if (options.MailLogEnabled)
        {
            ILogSource source = options.FollowsJournal
                ? new JournalFollower(_engine.Time)
                : new FileFollower(Path.GetFullPath(options.MailLog!), TimeSpan.FromMilliseconds(50), _engine.Time);
            var reader = new MailLogReader(_engine, _logging.CreateLogger("Analytics.Policy.MailLog"));
            _mailLog = Task.Run(() => reader.RunAsync(source, _stopping.Token), CancellationToken.None);
            LogMailLog(_logger, options.FollowsJournal ? "the journal (mail facility)" : Path.GetFullPath(options.MailLog!),
                _engine.AuthFromPostfix ? "rejected recipients and SASL failures" : "rejected recipients (logins come from Dovecot)");
        }

        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        if (_postfix is not null)
        {
            await _postfix.DisposeAsync();
            _postfix = null;
        }

        if (_dovecot is not null)
        {
            await _dovecot.DisposeAsync();
            _dovecot = null;
        }

        await _mailLog;
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None);
        _stopping.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Postfix policy service listening on {Address} (check_policy_service)")]
    private static partial void LogPostfix(ILogger logger, string address);

    [LoggerMessage(Level = LogLevel.Information, Message = "Dovecot auth policy server listening on {Url} (auth_policy_server_url)")]
    private static partial void LogDovecot(ILogger logger, string url);

    [LoggerMessage(Level = LogLevel.Information, Message = "Following Postfix's log {Source} for {What}")]
    private static partial void LogMailLog(ILogger logger, string source, string what);
}
