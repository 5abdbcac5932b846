using Analytics.Events;
using Analytics.Submission.Delivery;
using Analytics.Store;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Analytics.Submission;

public static class DeliveryServiceCollectionExtensions
{
    /// <summary>
    /// Registers the delivery queue on the listener's spool (section <c>Delivery</c>, validated at
    /// start-up, before any port opens) and a hosted service that loads the queue before the SMTP
    /// ports open and delivers to the configured next hops. Goes with <see cref="SubmissionServiceCollectionExtensions.AddSubmission(IServiceCollection)"/>.
    /// </summary>
    /// <param name="discardWhenUnconfigured">With no next hop configured, accept, count and drop the mail (serve --demo) instead of keeping it.</param>
    public static IServiceCollection AddDelivery(this IServiceCollection services, bool discardWhenUnconfigured = false)
    {
        services.AddSectionOptions<DeliveryOptions>(DeliveryOptions.SectionName)
            .PostConfigure(o => o.Discard |= discardWhenUnconfigured && !o.IsConfigured);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<DeliveryOptions>, DeliveryOptionsValidator>());
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(sp =>
        {
            var submission = sp.GetRequiredService<IOptions<SubmissionOptions>>().Value;
            var recipients = sp.GetRequiredService<RecipientDirectory>();
            return new DeliveryQueue(
                sp.GetRequiredService<IOptions<DeliveryOptions>>().Value,
                submission.SpoolDirectory,
                submission.ServerName,
                submission.NodeName,
                sp.GetRequiredService<IEventPublisher>(),
                recipients.IsLocalDomain,
                sp.GetRequiredService<ILogger<DeliveryQueue>>(),
                sp.GetRequiredService<TimeProvider>());
        });
        services.TryAddSingleton<IMailQueue>(sp => sp.GetRequiredService<DeliveryQueue>());
        services.AddHostedService<DeliveryHostedService>();
        return services;
    }

}

/// <summary>
/// Loads the queue when the host starts (registered after the listener's service, whose ports open
/// only once every service has started) and stops it before the listener drains: a message accepted
/// while draining stays in the spool for the next start.
/// </summary>
public sealed partial class DeliveryHostedService : IHostedService
{
    private static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(15);
    private readonly DeliveryQueue _queue;
    private readonly DeliveryOptions _options;
    private readonly ILogger _logger;

    public DeliveryHostedService(DeliveryQueue queue, IOptions<DeliveryOptions> options, ILogger<DeliveryHostedService> logger)
    {
        _queue = queue;
        _options = options.Value;
        _logger = logger;
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await _queue.StartAsync(deliver: true, cancellationToken);
        if (!_options.IsConfigured)
        {
            LogNoNextHop(_logger, _queue.List().Count, _queue.SpoolDirectory);
        }
        else if (_options.Discard)
        {
            LogDiscard(_logger);
        }
        else
        {
            LogNextHops(_logger, Describe(_options.Relay), Describe(_options.Mailbox), _options.Routes?.Count ?? 0);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => _queue.StopAsync(StopGrace, cancellationToken);

    private static string Describe(NextHopOptions? hop) =>
        hop?.Hosts is { Count: > 0 } hosts ? $"{hop.Protocol.ToString().ToLowerInvariant()} {string.Join(", ", hosts)} (TLS {hop.Tls})" : "none";

    [LoggerMessage(Level = LogLevel.Warning, Message = "No next hop configured (Delivery:Relay, Delivery:Mailbox, Delivery:Routes): accepted mail is kept in {SpoolDirectory} and not delivered ({Messages} messages there now)")]
    private static partial void LogNoNextHop(ILogger logger, int messages, string spoolDirectory);

    [LoggerMessage(Level = LogLevel.Information, Message = "Delivery discards every accepted message (demo): counted, not kept")]
    private static partial void LogDiscard(ILogger logger);

    [LoggerMessage(Level = LogLevel.Information, Message = "Delivery: relay {Relay}; mailbox {Mailbox}; {Routes} per-domain routes")]
    private static partial void LogNextHops(ILogger logger, string relay, string mailbox, int routes);
}
