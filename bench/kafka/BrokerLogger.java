// Set a broker logger's level at run time (KIP-412), e.g. kafka.request.logger to TRACE while counting requests.
// Usage: java -cp "<kafka libs>/*" bench/kafka/BrokerLogger.java BOOTSTRAP NODE_ID LOGGER LEVEL
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.common.config.ConfigResource;

public class BrokerLogger {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        try (Admin admin = Admin.create(props)) {
            ConfigResource broker = new ConfigResource(ConfigResource.Type.BROKER_LOGGER, args[1]);
            AlterConfigOp set = new AlterConfigOp(new ConfigEntry(args[2], args[3]), AlterConfigOp.OpType.SET);
            admin.incrementalAlterConfigs(Map.of(broker, List.of(set))).all().get();
        }
    }
}
