// Fallback readiness probe for infra/local/stack.sh when no Python with aiokafka is
// available: a real Metadata/DescribeCluster request with Kafka's own Java client.
// Run as a single-file program:  java -cp "<libs>/*" infra/local/KafkaReady.java 127.0.0.1:19092
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterResult;

public class KafkaReady {
  public static void main(String[] args) throws Exception {
    Properties props = new Properties();
    props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
    props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "10000");
    try (Admin admin = Admin.create(props)) {
      DescribeClusterResult cluster = admin.describeCluster();
      int brokers = cluster.nodes().get(10, TimeUnit.SECONDS).size();
      var controller = cluster.controller().get(10, TimeUnit.SECONDS);
      if (brokers == 0 || controller == null || controller.isEmpty()) {
        System.err.println("metadata lists no broker or no controller");
        System.exit(1);
      }
      System.out.println("cluster " + cluster.clusterId().get() + " brokers=" + brokers
          + " controller=" + controller.id());
    } catch (Exception e) {
      System.err.println(e);
      System.exit(1);
    }
  }
}
